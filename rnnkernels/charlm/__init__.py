"""The main job: a character-level language model trained with rnnkernels.

`python -m rnnkernels charlm` trains it; `python -m rnnkernels charlm sample`
generates text from a checkpoint. One concept per module: corpus, model,
training, sampling, checkpoint, plot, progress; cli wires them together.
"""
