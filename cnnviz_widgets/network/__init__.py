"""The model and its graph: loading, the layer graph, the activation extractor, memory.

`loading` resolves presets and weights (the offline VGG16 weights, `weights="imagenet"`, saved files);
`weights` fills a model's variables without a second copy; `graph` flattens any Keras model into its layer
table and graph; `extractor` computes every layer's activations in one pass under a byte budget; `memory`
sizes that budget from the container's limit; `feed` is the protocol the core computes from; `backend`
imports Keras quietly.
"""
