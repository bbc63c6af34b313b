"""The wire API, generated from protos/ by scripts/gen_protos.sh: v1 (vae.v1) and oip (inference)."""
