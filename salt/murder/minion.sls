{#- Installs what murder.peer needs on a minion, into Salt's own Python:
    libtorrent's bindings and zstandard from PyPI, and the murder core
    (murder_core/) from the master's file server (file_roots holds the checkout).
    Then run: salt '*' saltutil.sync_all -#}
{#- pillar murder:site_packages puts the core elsewhere (a Python path of Salt's own). -#}
{%- set site_packages = salt['pillar.get']('murder:site_packages') or salt['file.dirname'](grains['saltpath']) %}

murder-python-dependencies:
  pip.installed:
    - pkgs:
      - libtorrent
      - zstandard
      - pyyaml

murder-core:
  file.recurse:
    - name: {{ site_packages }}/murder_core
    - source: salt://murder_core
    - clean: True
    - exclude_pat: E@__pycache__
    - require:
      - pip: murder-python-dependencies
