"""Inference proxy: pooled upstream client, KServe v2 HTTP and gRPC pass-through, history summaries."""
