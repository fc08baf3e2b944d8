"""The Kafka bridge between a MES and the chain (spec 3.5).

messages (shapes of every BLK_* request and response), client (the MES side: one listener,
a pending table), endpoints (HTTP rules of the MES endpoints), store (token and response
tables), executor (one request against the node and erp/), service (the Kafka loop of
`chainmill mes bridge`), cli (its command line), aas (the AAS Manager/Core exchange).
"""
