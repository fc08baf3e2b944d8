"""MES adapter: production units, day reports, CNC data collection."""
