"""Training data: the procedural tabletop benchmark (``tabletop``) and the on-disk dataset
format with its writer and loader (``dataset``, documented in ``FORMAT.md``)."""
