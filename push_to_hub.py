"""Share a trained Atari agent on the Hugging Face Hub, as the course's Unit 3 does after training: the model
is evaluated (10 full games at epsilon 0.05, filmed), and its repo gets the weights, the script that trained
them, the video and a model card with what the course leaderboard reads.

    python dqn_atari.py --env-id SpaceInvadersNoFrameskip-v4 --total-timesteps 1000000
    python push_to_hub.py runs/<run_name> --hf-entity <your-hf-name>

The model is a .pt file or a run folder of dqn_atari.py or ddqn_atari.py (dqn_atari_fast.py has its own
--upload-model). The repo is `<hf-entity>/<env id>-<exp_name>-seed<seed>`. Without a login (`hf auth login`) or
a network, `runs/<run_name>/hub/` keeps the folder and the last line gives the command that uploads it.
A model of your own copy of dqn_atari.py, with another QNetwork: `--script my_dqn.py`, as in watch.py.
"""

import dataclasses
import importlib
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import tyro

import watch
from dqn_atari import UsageError

ROOT = Path(__file__).resolve().parent
PROJECT_SCRIPTS = ("dqn_atari.py", "ddqn_atari.py", "dqn_atari_fast.py")
NOT_HOW_IT_LEARNS = ("eval_only", "resume", "track", "capture_video", "save_model", "upload_model", "hf_entity")


@dataclass
class Args:
    model: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="MODEL")]
    """a model saved by dqn_atari.py or ddqn_atari.py: its .pt file or its run folder"""
    hf_entity: str = ""
    """the user or org name of the model repository from the Hugging Face Hub"""
    eval_episodes: int = 10
    """the number of full games of the evaluation (at epsilon 0.05, as in the Nature paper)"""
    seed: int = 0
    """the seed of the evaluation games (0: the run's own seed, as its --save-model evaluation)"""
    cuda: bool = True
    """if toggled, use the GPU when there is one (the CPU otherwise)"""
    script: str = "dqn_atari.py"
    """the script whose QNetwork the model is loaded into: a copy of dqn_atari.py of yours"""


def train_again_command(saved_args, saved_script, script):
    """The command that trains the model again: every flag that differs from the default of the script that saved it."""
    module = importlib.import_module(Path(saved_script).stem) if saved_script in PROJECT_SCRIPTS else script
    defaults = {field.name: field.default for field in dataclasses.fields(module.Args)}
    defaults["exp_name"] = Path(saved_script).stem
    flags = [f"--{name.replace('_', '-')} {value}" for name, value in saved_args.items()
             if name in defaults and name not in NOT_HOW_IT_LEARNS and value != defaults[name]]
    return " ".join([f"python {saved_script}", *flags])


def build_folder(args: Args):
    """runs/<run_name>/hub/ (or hub/ beside a model file): the model, its script, the video and the model card."""
    if not Path(args.model).exists():
        raise UsageError(f"no model at '{args.model}': pass the .pt file or the run folder of a run of yours")
    script = watch.import_script(args.script)  # the file the user names, never one that the model names
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    model_path = Path(script.resolve_model_path(args.model))
    q_network, saved = script.load_model(str(model_path), device)
    saved_script = saved.get("script", "dqn_atari.py")  # the script that trained it (older copies: none)
    env_id, seed = saved["env_id"], args.seed or saved.get("seed", 1)
    script.check_args(script.Args(env_id=env_id, capture_video=True, buffer_size=script.Args.batch_size))
    folder = model_path.parent / "hub"
    video = f"videos/{env_id.replace('/', '-')}__{saved['exp_name']}-hub__{seed}__{int(time.time())}"
    print(f"evaluating {model_path} on {env_id}, seed {seed}: {args.eval_episodes} games, filmed")
    returns = script.evaluate(q_network, env_id, args.eval_episodes, device, 0.05, video, seed)
    folder.mkdir(exist_ok=True)
    shutil.copy(model_path, folder / model_path.name)
    source = ROOT / saved_script if saved_script in PROJECT_SCRIPTS else Path(args.script)
    shutil.copy(source, folder / saved_script)
    for mp4 in sorted(Path(video).glob("*.mp4"))[-1:]:
        shutil.copy(mp4, folder / "replay.mp4")
    repo_id = f"{env_id.replace('/', '-')}-{saved['exp_name']}-seed{saved['seed']}"
    repo_id = f"{args.hf_entity}/{repo_id}" if args.hf_entity else repo_id
    write_card(folder / "README.md", saved, saved_script, repo_id, returns, train_again_command(saved, saved_script, script))
    return folder, repo_id


def write_card(path, saved, saved_script, repo_id, returns, command):
    """The model card: its YAML header is what the course leaderboard reads (the game, the tags, mean_reward)."""
    from huggingface_hub import metadata_eval_result, metadata_save

    env_id, score = saved["env_id"], f"{np.mean(returns):.2f} +/- {np.std(returns):.2f}"
    path.write_text(
        f"# {saved['exp_name']} playing {env_id}\n\nA Deep Q-Learning agent trained with `{saved_script}`. Evaluation: "
        f"{len(returns)} full games at epsilon 0.05, {score}.\n\nWatch it play, its Q-values beside the game, and "
        f"evaluate it, from the project that holds `{saved_script}`:\n\n```sh\npython watch.py {repo_id}\n"
        f"hf download {repo_id} --local-dir agent\npython {saved_script} --eval-only agent --capture-video\n```\n\n"
        f"Train it again:\n\n```sh\n{command}\n```\n")
    result = metadata_eval_result(model_pretty_name=saved["exp_name"], task_pretty_name="reinforcement-learning",
                                  task_id="reinforcement-learning", metrics_pretty_name="mean_reward",
                                  metrics_id="mean_reward", metrics_value=score, dataset_pretty_name=env_id,
                                  dataset_id=env_id)
    tags = [env_id, "deep-reinforcement-learning", "reinforcement-learning", "custom-implementation"]
    metadata_save(path, {"tags": tags, "library_name": "pytorch", **result})


def upload(folder, repo_id):
    """Uploaded, or, without a login or a network, kept with the command that uploads it later."""
    from huggingface_hub import HfApi, get_token

    try:
        assert get_token() is not None, "not logged in"
        HfApi().create_repo(repo_id, exist_ok=True)
        print(f"uploaded to {HfApi().upload_folder(repo_id=repo_id, folder_path=str(folder))}")
    except Exception as e:
        print(f"not uploaded to the Hugging Face Hub ({e or type(e).__name__}): the files are in {folder}; "
              f"upload them with: hf auth login && hf upload {repo_id} {folder} .")


def main(argv=None):
    args = tyro.cli(Args, args=argv)
    try:
        if args.eval_episodes < 1:
            raise UsageError("--eval-episodes must be at least 1: the card carries the evaluation's score")
        upload(*build_folder(args))
    except Exception as e:  # the UsageError of dqn_atari.py, or of the --script copy
        if type(e).__name__ != "UsageError":
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
