"""What training and previews share, below both: latents (packing, normalising, the
VAEs), text features (encoding, padding, the cache), log-mel, video reading and the
suffix masks. Nothing here imports training or previews."""
