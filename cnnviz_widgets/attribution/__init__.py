"""Attribution: why the network decides, as heat maps over the input picture.

`classes` finds a model's classifier and names its classes, and says what a score is (`Target`); `gradients`
takes a score's gradient through the model's own layers by the shortest way the activation cache allows, one
input or a batch. One module per method family turns scores and gradients into maps, each method a
`methods.Method` listed in `catalogue`: the CAMs (`gradcam`: Grad-CAM, Grad-CAM++, LayerCAM; `scorecam`),
input gradients (`saliency`: saliency, input x gradient; `smoothgrad`: SmoothGrad, VarGrad; `integrated`;
`guided`: Guided Backprop, Guided Grad-CAM) and perturbation (`occlusion`), each giving an
`explanation.Explanation`. `explainer` serves predictions and every method for one model, with the last results
kept; `heatmaps` resizes and overlays the maps on the picture. `sanity` (the weight randomisation test) and
`faithfulness` (deletion and insertion curves) judge the maps. TensorFlow is imported inside functions; no
widgets here.
"""
