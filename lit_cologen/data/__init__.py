"""Data: the sample schema, WebDataset shards, the Shapes-5 world, builders for the paper's datasets."""
