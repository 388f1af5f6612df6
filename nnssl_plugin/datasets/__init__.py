"""Raw datasets: the CT phantom demo data and converters for BTCV and AbdomenCT-1K."""
