"""Analysis: the questions users ask, answered from measurements.

``profile`` (the profile policy: defaults, TOML specs, auto device, meta or real), ``gsnr`` (the
g-SNR SGD-SaI gives each tensor and its drift), ``plan`` (which GPU, how many, what batch) and
``check`` (a result against a baseline and budgets). Each returns a typed result; none draws.
"""
