"""Attribution: why the network decides, as heat maps over the input picture.

`classes` finds a model's classifier and names its classes, and says what a score is (`Target`); `gradients`
takes a score's gradient through the model's own layers by the shortest way the activation cache allows; one
module per method turns it into a map (`gradcam`, `saliency`), each giving an `explanation.Explanation`;
`explainer` serves predictions and every method for one model, with the last results kept; `heatmaps` resizes
and overlays the maps on the picture. TensorFlow is imported inside functions; no widgets here.
"""
