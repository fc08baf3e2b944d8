"""The Kafka bridge between a MES and the chain (spec 3.5): message shapes first."""
