"""Before and after a tfds download: is the network there, and what a failure leaves.

tfds retries a download it cannot make for minutes (10 tries with growing
pauses: ~3.5 minutes for CIFAR-10 without network) before it fails, and
leaves `downloads/<name>/*.tmp.*` folders and an `<name>/incomplete.*`
folder behind. This module owns the two things the tfds source
(`mixer.data.tfds`) does around a download:

* `unreachable(urls)`: whether the hosts a dataset downloads from (or the
  proxy in `$HTTPS_PROXY` / `$HTTP_PROXY` / `$ALL_PROXY`) answer a TCP
  connection, all tried at once and given `PROBE_SECONDS`; a name that does
  not resolve fails at once. Only when none answers is the download
  skipped, with one line saying so.
* `Leftovers`: what a download created (temporary downloads, the
  `incomplete.*` dataset folder, folders that were not there before) is
  removed when it fails. Nothing that existed before is touched.

No TensorFlow here; stdlib sockets only.
"""

import os
import shutil
import socket
import threading
import urllib.parse
from typing import Dict, Iterable, List, Optional, Tuple

# How long the hosts of a download get to accept a connection, together.
PROBE_SECONDS = 4.0
_PROXY_VARIABLES = ('HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy',
                    'ALL_PROXY', 'all_proxy')
_DEFAULT_PORTS = {'http': 80, 'https': 443, 'ftp': 21}


def _endpoints(urls: Iterable[str]) -> List[Tuple[str, int]]:
  """(host, port) of each URL's server, or of the proxy when one is set;
  none without URLs."""
  urls = list(urls)
  if not urls:
    return []
  for variable in _PROXY_VARIABLES:
    proxy = os.environ.get(variable, '')
    if proxy:
      parsed = urllib.parse.urlsplit(proxy if '//' in proxy
                                     else f'http://{proxy}')
      if parsed.hostname:
        return [(parsed.hostname, parsed.port or 80)]
  found = []
  for url in urls:
    parsed = urllib.parse.urlsplit(url)
    if not parsed.hostname or parsed.scheme not in _DEFAULT_PORTS:
      continue
    endpoint = (parsed.hostname,
                parsed.port or _DEFAULT_PORTS[parsed.scheme])
    if endpoint not in found:
      found.append(endpoint)
  return found


def _connect(host: str, port: int, seconds: float) -> Optional[str]:
  """None if `host:port` accepts a connection, else why not."""
  try:
    with socket.create_connection((host, port), timeout=seconds):
      return None
  except socket.gaierror as e:
    return f'{host}: {e.strerror or e}'
  except OSError as e:
    return f'{host}:{port}: {e.strerror or e or type(e).__name__}'


def unreachable(urls: Iterable[str], seconds: float = PROBE_SECONDS
                ) -> Optional[str]:
  """Why none of `urls`' servers (or the proxy) can be reached, or None
  when one can -- or when there is nothing to try (no known URL).

  The connections are tried in parallel daemon threads, so a hung name
  lookup costs `seconds`, not minutes, and never delays the exit.
  """
  endpoints = _endpoints(urls)
  if not endpoints:
    return None
  outcomes: Dict[Tuple[str, int], Optional[str]] = {}
  done = threading.Event()
  lock = threading.Lock()

  def attempt(endpoint):
    outcome = _connect(*endpoint, seconds)
    with lock:
      outcomes[endpoint] = outcome
      if outcome is None or len(outcomes) == len(endpoints):
        done.set()

  for endpoint in endpoints:
    threading.Thread(target=attempt, args=(endpoint,), daemon=True,
                     name='mixer-network-probe').start()
  done.wait(seconds + 0.5)
  with lock:
    if any(o is None for o in outcomes.values()):
      return None
    reasons = [outcomes.get(e) or f'{e[0]}:{e[1]}: no answer within '
               f'{seconds:g} s' for e in endpoints]
  return '; '.join(reasons)


class Leftovers:
  """Removes what a failed tfds download created under a TFDS data dir.

  Created before the download with the data dir `root` and the builder's
  name; `remove()` after a failure deletes the new `*.tmp.*` and
  `incomplete.*` entries under `root/downloads/<name>/` and `root/<name>/`
  (at any depth: builder configs add a level), then the folders that did
  not exist before and are now empty, `root` itself included. A finished
  download in `downloads/` (tfds reuses it) and anything older are kept.
  """

  def __init__(self, root: str, name: str):
    self.root = os.path.abspath(os.path.expanduser(root))
    self.trees = [os.path.join(self.root, 'downloads', name),
                  os.path.join(self.root, name)]
    self.folders = [self.root, os.path.join(self.root, 'downloads'),
                    os.path.join(self.root, 'downloads', 'extracted'),
                    *self.trees]
    self.before = {f for f in self.folders if os.path.exists(f)}
    for tree in self.trees:
      self.before.update(self._walk(tree))

  @staticmethod
  def _walk(tree: str) -> List[str]:
    paths = []
    for folder, dirs, files in os.walk(tree):
      paths += [os.path.join(folder, n) for n in dirs + files]
    return paths

  def remove(self) -> List[str]:
    """Deletes the failed download's leftovers; returns what it removed."""
    removed = []
    for tree in self.trees:
      for path in self._walk(tree):
        name = os.path.basename(path)
        if path in self.before or not ('.tmp.' in name or
                                       name.startswith('incomplete.')):
          continue
        if any(path.startswith(r + os.sep) for r in removed):
          continue
        if os.path.isdir(path) and not os.path.islink(path):
          shutil.rmtree(path, ignore_errors=True)
        else:
          try:
            os.remove(path)
          except OSError:
            continue
        removed.append(path)
    new_folders = [p for tree in self.trees for p in self._walk(tree)
                   if p not in self.before and os.path.isdir(p)]
    for folder in sorted(set(new_folders) | set(self.folders), key=len,
                         reverse=True):  # Deepest first.
      if folder in self.before:
        continue
      try:
        os.rmdir(folder)  # Only when empty.
        removed.append(folder)
      except OSError:
        pass
    return removed
