"""The trainer's stages, as the operator's Jobs run them and as a local run runs both.

Layered bottom to top, each importing only those below it:

- `context.py`: `JobContext`, what a stage is given;
- `results.py`: what every stage leaves behind (the result manifest, the termination
  message), however it ends;
- `prepare.py`: the dataset prepared and uploaded;
- `train.py`: the model resolved, the inputs fetched, the trainer run in this process
  with the run's hooks and previews, the outputs published;
- `ranks.py`: the train stage in several ranks (`training/launch.py`);
- `local.py`: a local run's folder and its continuation;
- `dispatch.py`: `run_stage` and `run_local`, on top.
"""
