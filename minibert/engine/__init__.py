"""The one path from texts to vectors: options -> tokenize -> batch -> forward -> pool -> normalise -> stream.

`Engine` (core.py) owns that path. Everything that turns texts into vectors calls it: `Encoder` and
`NumpyEncoder` (its torch and numpy backends), the corpus runner, the server, Ray Data and Ray Serve.

- options.py   `EmbedOptions`, one call's settings as one value, checked once
- pooling.py   the pooling modes as one table, and L2 normalisation, for both backends
- core.py      `Engine`: tokenizing (prompts, truncation side, token-id inputs), length-sorted batches,
               the backend's forward, pooling, normalisation, streaming
- torch_backend.py / numpy_backend.py   the forward pass behind one small interface: `forward`, `map`
"""
