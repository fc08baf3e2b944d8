"""CNC data collector (spec 3.4): MQTT -> validation -> per-machine plug-in -> `cnc_data`."""
