"""Classical compressed-sensing reconstruction (l1-wavelet SENSE), a baseline for any DIRECT model."""
