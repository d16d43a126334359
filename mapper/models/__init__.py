"""MiSo: Swin-V2 satellite and covariate encoders, multi-scale implicit query, geo encoder, heads.

Modules, small blocks first: ``config`` (sizes), ``swin`` (encoders, SatlasPretrain weights),
``implicit`` (the query decoder), ``geo`` (position encoder), ``miso`` (the full model),
``checkpoint`` (files that rebuild the model alone), ``flops`` (analytic cost per query).
"""
