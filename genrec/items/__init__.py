"""Item text encoders and semantic-ID tokenizers (RQ-KMeans, RQ-VAE)."""
