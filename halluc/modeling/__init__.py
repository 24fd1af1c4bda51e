"""Model families (one record each, `halluc.modeling.registry`), loading, and the offline tiny models."""
