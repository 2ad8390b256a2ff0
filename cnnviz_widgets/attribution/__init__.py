"""Attribution: why the network decides, as heat maps over the input picture.

`classes` finds a model's classifier and names its classes, and says what a score is (`Target`); `explainer`
computes predictions, Grad-CAM and gradient saliency through the model's own layers; `heatmaps` resizes and
overlays the maps on the picture. TensorFlow is imported inside functions; no widgets here.
"""
