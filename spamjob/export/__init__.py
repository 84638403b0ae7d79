"""A trained classifier in other libraries' layouts: transformers (hf.py), ONNX (onnx.py), the
Hugging Face Hub (hub.py), and the model card that goes with them (card.py)."""
