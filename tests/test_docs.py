"""The docs are tests: every documented command runs, as typed plus tiny overrides.

Collects the shell commands in the ```bash / ```sh blocks of README.md and
docs/*.md that run this project (`python train.py`, `python sweep.py`,
`python -m mixer.<tool>`, `python benchmarks/...`, `bash benchmarks/...`)
and runs each on the CPU in a sandbox: a temporary folder holding links to
the repository's files, with `../shared` beside it, so relative paths
(`configs/...`, `workdirs/...`, `../shared/data`) mean what they mean at the
repository root. The commands of one block run in order in one sandbox (a
sweep, then its report).

A command alone in its block and identical to an earlier one alone in its
block, up to its `--workdir` and the values that `TINY` overrides (the
README and docs/data.md both show the main job; docs/benchmarks.md shows the
side-by-side at two batch sizes), is run once.

Each command is shortened only by appending the overrides in `TINY` for its
tool (later flags win over earlier ones): 3 steps at batch 8 and an eval of
at most 64 examples for training and sweeps (a command's own smaller eval
split is kept; a warmup the command states in steps becomes 1 step, so that
it fits; a sweep's own few-shot evaluations use 64 test images, and a sweep
of more than two runs trains its first and last, `--only`), 256 test
images for few-shot, 1 small step for benchmarks, few images for the
input-pipeline and checkpoint benchmarks, the smallest model in one round for
the side-by-side benchmark, and only Mixer-S/32 for the inference benchmark.
Setup commands (venv, pip) and
the test command itself are not run here.

A block that needs what CI cannot have (a GPU, the internet, official
checkpoints, ImageNet) is marked in the doc source, on the line before its
opening fence, with `<!-- docs-test: skip (reason) -->`; its commands are
reported as skipped with that reason.
"""

import dataclasses
import glob
import importlib
import os
import pathlib
import re
import shlex
import subprocess
import sys
from typing import List, Optional

import pytest

from tests.conftest import REPO
from tests.conftest import shared_data_dir

DOCS = ['README.md'] + sorted(
    os.path.relpath(p, REPO) for p in glob.glob(str(REPO / 'docs' / '*.md')))
SKIP_MARK = re.compile(r'<!--\s*docs-test:\s*skip\s*\((.*)\)\s*-->')
FENCE = re.compile(r'^```(\w*)\s*$')
RUNNABLE = re.compile(r'^(python3? (train\.py|sweep\.py|-m mixer\.\w+|'
                      r'benchmarks/\S+)|bash benchmarks/\S+|benchmarks/\S+)')
EVAL_EXAMPLES = 64

# The overrides appended to each kind of command (documented above and in
# README.md, "How the docs are tested").
TINY = {
    'train.py': ['--config.num_train_steps=3', '--config.batch_size=8',
                 f'--config.eval_batch_size={EVAL_EXAMPLES}'],
    'sweep.py': ['--set=num_train_steps=3', '--set=batch_size=8',
                 f'--set=eval_batch_size={EVAL_EXAMPLES}',
                 f'--set=fewshot.num_test={EVAL_EXAMPLES}'],
    'mixer.benchmark': ['--batch_size=2', '--steps=1', '--repeats=1',
                        '--peak_matmul_size=256'],
    'benchmarks/input_pipeline.py': ['--num_images=32', '--batches=2',
                                     '--warmup=1'],
    'benchmarks/checkpoint_integrity.py': ['--gigabytes=0.0625'],
    'benchmarks/side_by_side.py': [
        '--set=model.hidden_dim=32', '--set=model.num_blocks=1',
        '--set=model.tokens_mlp_dim=16', '--set=model.channels_mlp_dim=64',
        '--batch_size=8', '--rounds=1', '--steps=1', '--peers=project,minimal'],
    'mixer.fewshot': [f'--num_test={EVAL_EXAMPLES * 4}'],
}


@dataclasses.dataclass
class Command:
  doc: str
  line: int
  text: str  # As written (continuations joined, comment dropped).
  skip: Optional[str]  # The reason from the doc's skip mark.

  @property
  def tool(self) -> str:
    words = shlex.split(self.text)
    words = [w for w in words if not re.match(r'^\w+=', w)]  # VAR=value.
    if words[0] in ('python', 'python3'):
      words = words[1:]
    if words[0] == 'bash':
      words = words[1:]
    return words[1] if words[0] == '-m' else words[0]

  @property
  def id(self) -> str:
    return f'{self.doc}:{self.line}:{self.tool}'


def _strip_comment(line: str) -> str:
  """Drops a trailing `# comment` that is not inside quotes."""
  quote = None
  for i, ch in enumerate(line):
    if quote:
      if ch == quote:
        quote = None
    elif ch in '\'"':
      quote = ch
    elif ch == '#' and (i == 0 or line[i - 1].isspace()):
      return line[:i].rstrip()
  return line.rstrip()


def collect(doc: str) -> List[List[Command]]:
  """The runnable commands of `doc`, one list per code block."""
  lines = (REPO / doc).read_text().splitlines()
  blocks, i = [], 0
  while i < len(lines):
    m = FENCE.match(lines[i])
    if not m or m.group(1) not in ('bash', 'sh', 'shell'):
      i += 1
      continue
    prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()),
                '')
    mark = SKIP_MARK.search(prev)
    i += 1
    body = []
    while i < len(lines) and not lines[i].startswith('```'):
      body.append((i + 1, lines[i]))
      i += 1
    i += 1
    commands, text, first = [], '', None
    for number, raw in body:
      line = _strip_comment(raw)
      if first is None:
        first = number
      if line.endswith('\\'):
        text += line[:-1].rstrip() + ' '
        continue
      text = (text + line.strip()).strip()
      for part in (p.strip() for p in text.split('&&')):
        if RUNNABLE.match(re.sub(r'^(\w+=\S+\s+)+', '', part)):
          commands.append(Command(doc, first, part,
                                  mark.group(1) if mark else None))
      text, first = '', None
    if commands:
      blocks.append(commands)
  return blocks


def _eval_split(command: Command) -> Optional[str]:
  """`--config.eval_split` for a train.py command: the config's eval split
  cut to EVAL_EXAMPLES examples (an existing slice is replaced)."""
  words = shlex.split(command.text)
  spec = next(w.split('=', 1)[1] for w in words if w.startswith('--config='))
  path, _, arg = spec.partition(':')
  module = importlib.import_module(path[:-len('.py')].replace('/', '.'))
  config = module.get_config(arg) if arg else module.get_config()
  for w in words:  # An eval_split the command itself sets.
    if w.startswith('--config.eval_split='):
      return w.split('=', 1)[1]
  split = re.sub(r'\[.*\]$', '', str(config.eval_split).split('+')[0])
  return f'{split}[:{EVAL_EXAMPLES}]'


def _first_and_last_runs(command: Command) -> Optional[str]:
  """'FIRST,LAST' of a sweep command's runs when it has more than two and
  names none itself (`--only`, `--dry_run`): the docs check trains those
  two; tests/test_sweep.py builds every run's config of every shipped
  sweep."""
  words = shlex.split(command.text)
  if any(w.startswith(('--only', '--dry_run')) for w in words):
    return None
  from mixer import sweeps  # pylint: disable=g-import-not-at-top
  spec = next(w.split('=', 1)[1] for w in words if w.startswith('--sweep='))
  names = [r.name for r in sweeps.load_sweep(spec, root=str(REPO))]
  return f'{names[0]},{names[-1]}' if len(names) > 2 else None


def shortened(command: Command) -> str:
  extra = list(TINY.get(command.tool, []))
  sets_warmup = 'warmup_steps=' in command.text
  if command.tool == 'train.py':
    extra.append(f'--config.eval_split={_eval_split(command)}')
    if sets_warmup:  # An explicit warmup must fit the 3 steps.
      extra.append('--config.warmup_steps=1')
  if command.tool == 'mixer.benchmark' and '--mode=inference' in command.text:
    extra.append('--models=S/32')  # One Table 1 model, the smallest.
  if command.tool == 'sweep.py':
    extra.append(f'--set=eval_split=test[:{EVAL_EXAMPLES}]')
    only = _first_and_last_runs(command)
    if only:
      extra.append(f'--only={only}')
    if sets_warmup:
      extra.append('--set=warmup_steps=1')
  return ' '.join([command.text] + [shlex.quote(e) for e in extra])


BLOCKS = [block for doc in DOCS for block in collect(doc)]


def _flag_key(word: str) -> str:
  """'--batch_size=8' -> '--batch_size'; '--set=model.x=1' -> '--set=model.x'
  (a repeatable --set is one flag per config field)."""
  name, _, value = word.partition('=')
  if name in ('--set', '--config') or name.startswith('--config.'):
    return name + ('=' + value.split('=', 1)[0] if '=' in value else '')
  return name


def _normalized(line: str, tool: str) -> str:
  """`line` as it runs: its workdir left out, and a flag that `TINY`
  overrides for `tool` given only its last (winning) value."""
  line = re.sub(r'--workdir=\S+', '--workdir=W', line)
  overridden = {_flag_key(w) for w in TINY.get(tool, [])}
  words = shlex.split(line)
  keys = [_flag_key(w) if w.startswith('--') else None for w in words]
  kept = [w for i, (w, k) in enumerate(zip(words, keys))
          if k not in overridden or k not in keys[i + 1:]]
  return ' '.join(kept)


def _already_run(command: Command, line: str) -> Optional[str]:
  """The id of an earlier single-command block that runs exactly `line`
  (up to its workdir and the values `TINY` overrides), if any, when
  `command` is alone in its block too (later commands of a block may read
  its workdir): such a command is checked once."""
  own = next(block for block in BLOCKS if command in block)
  if len(own) > 1:  # Later commands of its block may read its workdir.
    return None
  for block in BLOCKS:
    if command in block:
      return None
    if len(block) == 1 and not block[0].skip and _normalized(
        shortened(block[0]), block[0].tool) == _normalized(line, command.tool):
      return block[0].id
  return None


def _sandbox(tmp_path: pathlib.Path) -> pathlib.Path:
  """<tmp>/repo (links to the checkout's files) beside <tmp>/shared."""
  root = tmp_path / 'repo'
  root.mkdir()
  for name in os.listdir(REPO):
    if name.startswith('.') or name in ('workdirs', 'tests'):
      continue
    (root / name).symlink_to(REPO / name)
  (tmp_path / 'shared').mkdir()
  (tmp_path / 'shared' / 'data').symlink_to(shared_data_dir())
  return root


def test_every_documented_tool_is_collected():
  commands = [c for block in BLOCKS for c in block]
  tools = {c.tool for c in commands}
  assert {'train.py', 'sweep.py', 'mixer.report', 'mixer.benchmark'} <= tools
  assert all(c.skip is None or c.skip.strip() for c in commands)
  # The README's main job, the one command every new user types.
  readme = [c for c in commands if c.doc == 'README.md']
  assert readme[0].text == ('MIXER_DATA_DIR=../shared/data python train.py '
                            '--config=configs/cifar10_baseline.py '
                            '--workdir=workdirs/cifar10_baseline')


@pytest.mark.parametrize('block', BLOCKS,
                         ids=[f'{b[0].doc}:{b[0].line}' for b in BLOCKS])
def test_documented_commands_run(block, tmp_path, data_dir):
  del data_dir  # Only for its skip when the data is absent.
  if all(c.skip for c in block):
    pytest.skip(f'{block[0].doc}:{block[0].line}: {block[0].skip}')
  root = _sandbox(tmp_path)
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  # `python` in a command is the interpreter running the tests (its venv),
  # also when pytest was started as .venv/bin/python without activating it.
  env['PATH'] = os.pathsep.join([os.path.dirname(sys.executable),
                                 env.get('PATH', '')])
  env.pop('MIXER_DATA_DIR', None)  # The command says where the data is.
  env['MIXER_DATA_DIR'] = str(shared_data_dir())  # Unless it does not.
  for command in block:
    if command.skip:
      print(f'skipped {command.id}: {command.skip}')
      continue
    line = shortened(command)
    same = _already_run(command, line)
    if same:
      print(f'{command.id}: the same command as {same} (up to its workdir)')
      continue
    out = subprocess.run(line, shell=True, cwd=root, env=env,
                         capture_output=True, text=True, timeout=600,
                         executable='/bin/bash')
    assert out.returncode == 0, (
        f'{command.doc}:{command.line} failed ({out.returncode}):\n$ {line}\n'
        + (out.stdout + out.stderr)[-4000:])
    assert 'Traceback' not in out.stderr, out.stderr[-4000:]


def test_ci_runs_the_readme_setup_installs_and_test_command_verbatim():
  """The README's two set-up commands stay two one-line blocks, and
  `.ci/run` makes the first one's installs in a fresh venv, then runs the
  second as written."""
  readme = (REPO / 'README.md').read_text()
  blocks = []
  for title in ('**Set up and run the main job**', '**Run the tests**'):
    rest = readme[readme.index(title):]
    body = rest[rest.index('```bash\n') + len('```bash\n'):]
    blocks.append(body[:body.index('```')].strip().splitlines())
  assert [len(b) for b in blocks] == [1, 1], blocks
  setup, test = blocks[0][0], blocks[1][0]
  ci = [line.strip() for line in (REPO / '.ci' / 'run').read_text()
        .splitlines() if line.strip() and not line.startswith('#')]
  assert ci[-1] == test
  assert 'python3 -m venv .ci-venv' in ci
  for install in ('pip install -r requirements.txt',
                  'pip install --no-deps -e .'):
    assert install in setup
    assert any(install.replace('pip install', 'pip install -q') in line
               for line in ci), install
