"""A dataset that is neither here nor downloadable fails in seconds, once, cleanly.

No test here reaches the internet: the network's absence is faked by making
every socket connection and name lookup fail at once (as they do without a
network), or, to see what a download that fails half-way leaves, by making
the HTTP requests tfds sends fail while the probe is told the network is up.
The data dir is a temporary TFDS folder, and `$MIXER_DATA_DIR` is unset so
that tfds is the source, as for a user without a local copy.
"""

import os
import socket
import time

import pytest

from mixer import data
from mixer.data import download
from tests.conftest import tiny_config

_NO_NAME = 'Name or service not known'


@pytest.fixture
def offline(tmp_path, monkeypatch):
  """No local copy and no network; returns the (absent) TFDS data dir."""
  def no_network(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, _NO_NAME)

  monkeypatch.setattr(socket, 'create_connection', no_network)
  monkeypatch.setattr(socket, 'getaddrinfo', no_network)
  for variable in ('MIXER_DATA_DIR', 'HTTPS_PROXY', 'https_proxy',
                   'HTTP_PROXY', 'http_proxy', 'ALL_PROXY', 'all_proxy'):
    monkeypatch.delenv(variable, raising=False)
  root = tmp_path / 'tensorflow_datasets'
  monkeypatch.setenv('TFDS_DATA_DIR', str(root))
  # tfds reads $TFDS_DATA_DIR once, when it is first imported.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(tfds.core.constants, 'DATA_DIR', str(root))
  data.clear_cache()
  yield root
  data.clear_cache()


def test_missing_dataset_without_network_fails_in_seconds(offline, tmp_path):
  from mixer import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'run'
  t0 = time.time()
  with pytest.raises(data.DatasetUnavailable) as info:
    train.train_and_evaluate(tiny_config(), str(workdir))
  assert time.time() - t0 < 10
  message = str(info.value)
  assert message.startswith(
      f"'cifar10' is not prepared in the TFDS data dir {offline} and cannot "
      f'be downloaded: no network (www.cs.toronto.edu: {_NO_NAME})'), message
  assert 'MIXER_DATA_DIR' in message and '\n' not in message
  assert not offline.exists()  # tfds created nothing.
  assert not workdir.exists()


def test_a_sweep_tries_an_unavailable_dataset_once(offline, tmp_path,
                                                   monkeypatch):
  import sweep  # pylint: disable=g-import-not-at-top
  probes = []
  probe = download.unreachable
  monkeypatch.setattr(download, 'unreachable',
                      lambda urls: probes.append(urls) or probe(urls))
  sweep_file = tmp_path / 'three.py'
  sweep_file.write_text(
      'from configs import cifar10_baseline\n'
      'from mixer import sweeps\n'
      'def get_sweep():\n'
      '  return [sweeps.run(f"lr{i}", cifar10_baseline.get_config,\n'
      '                     learning_rate=10.0 ** -i) for i in (2, 3, 4)]\n')
  out = tmp_path / 'sweep'
  t0 = time.time()
  outcomes = sweep.run_sweep(str(sweep_file), str(out))
  assert time.time() - t0 < 10
  assert len(probes) == 1
  assert [o['status'] for o in outcomes] == ['failed'] * 3
  assert len({o['error'] for o in outcomes}) == 1
  assert outcomes[0]['error'].startswith('DatasetUnavailable: ')
  later = (out / 'lr4' / 'error.txt').read_text()
  assert 'an earlier run of this sweep found the same dataset unavailable' \
      in later
  assert not offline.exists()


def test_a_failed_download_leaves_nothing_behind(offline, monkeypatch):
  import requests  # pylint: disable=g-import-not-at-top
  # The probe sees a network; the download itself then fails at once.
  monkeypatch.setattr(download, 'unreachable', lambda urls: None)

  def refused(self, request, **kwargs):
    raise requests.exceptions.ConnectionError(
        f'Failed to resolve {request.url}: {_NO_NAME}')

  monkeypatch.setattr(requests.adapters.HTTPAdapter, 'send', refused)
  # What was there before stays: another dataset, a finished download.
  (offline / 'mnist' / '3.0.1').mkdir(parents=True)
  (offline / 'mnist' / '3.0.1' / 'dataset_info.json').write_text('{}')
  (offline / 'downloads').mkdir()
  (offline / 'downloads' / 'kept.tar.gz').write_bytes(b'x')
  before = sorted(p.relative_to(offline) for p in offline.rglob('*'))
  config = tiny_config()
  t0 = time.time()
  with pytest.raises(data.DatasetUnavailable, match='could not download'):
    data.dataset_info(config)
  assert time.time() - t0 < 10
  assert sorted(p.relative_to(offline) for p in offline.rglob('*')) == before


def test_leftovers_of_a_download_in_a_fresh_data_dir(tmp_path):
  root = tmp_path / 'tfds'
  leftovers = download.Leftovers(str(root), 'cifar10')
  tmp = root / 'downloads' / 'cifar10' / 'cs.toronto.edu_x.tar.gz.tmp.4b36c4'
  tmp.mkdir(parents=True)
  (tmp / 'part').write_bytes(b'x')
  (root / 'downloads' / 'extracted').mkdir()
  (root / 'cifar10' / 'incomplete.LB9M14_3.0.2').mkdir(parents=True)
  removed = leftovers.remove()
  assert not root.exists(), sorted(map(str, root.rglob('*')))
  assert str(tmp) in removed


def test_probe_says_why_and_tries_the_proxy_instead(monkeypatch):
  tried = []

  def connect(address, timeout=None):
    tried.append(address)
    raise ConnectionRefusedError(111, 'Connection refused')

  monkeypatch.setattr(socket, 'create_connection', connect)
  monkeypatch.setenv('HTTPS_PROXY', 'http://proxy.local:3128')
  why = download.unreachable(['https://example.org/a.tar.gz'])
  assert tried == [('proxy.local', 3128)]
  assert why == 'proxy.local:3128: Connection refused'
  assert download.unreachable([]) is None  # Nothing known to try.
