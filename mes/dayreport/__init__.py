"""Day reports (spec 3.3): indicator values, flow and record ids, publication decisions.

Pure functions only (values in, values out); the scheduler, the database and the bridge
call them from the edges.
"""
