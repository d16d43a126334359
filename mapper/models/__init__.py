"""MiSo: satellite and covariate Swin V2 encoders, implicit multi-scale query, geo encoder, heads."""
