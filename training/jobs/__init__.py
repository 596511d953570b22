"""Training jobs: a user's dataset → validated, split, preprocessed-in-graph, fitted (grid search on Ray) → ONNX →
parity gate → a published version with a model card. Pure training code: no gateway, no database."""
