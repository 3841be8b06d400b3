"""The formats BERT weights come in, and where they come from: Hugging Face folders (safetensors, sharded,
pytorch_model.bin), Google's TensorFlow checkpoints, sentence-transformers metadata, saved int8 models,
the Hub; the checkpoint names they share; and files written whole or not at all."""
