"""ERP adapter: partner and order requests, RFQs and quotations between companies."""
