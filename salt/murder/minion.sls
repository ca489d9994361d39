{#- Installs murder on a minion the way it is installed on the master: pip installs the
    project's wheel (and with it libtorrent, zstandard, libarchive-c, pyyaml) into the Python
    Salt runs on, and the system's libarchive, through which releases are unpacked (without it
    murder falls back to tarfile, several times slower on releases of many small files).
    The wheel comes from the master's file server: list its directory in file_roots
    (python -m murder_core.saltext snippet --wheel-dir DIR does). Salt finds the modules
    through the package's salt.loader entry point; nothing is copied into site-packages,
    so a master that is also a minion keeps its runner. -#}
{%- set wheels = salt['cp.list_master'](prefix='murder_salt-') | select('match', '^murder_salt-[^/]*\\.whl$') | list %}
{%- if wheels | length != 1 %}
murder-wheel:
  test.fail_without_changes:
    - name: >-
        the master's file server must serve exactly one murder_salt-*.whl at its top, found
        {{ wheels | join(', ') or 'none' }}: run python -m murder_core.saltext snippet --wheel-dir DIR
        on the master and restart it
{%- else %}
{%- set wheel = wheels[0] %}
{%- set version = wheel.split('-')[1] %}
{%- set cache = opts['cachedir'] ~ '/murder/wheels' %}

{%- set libarchive = {'Debian': 'libarchive13', 'RedHat': 'libarchive', 'Suse': 'libarchive13',
                      'Arch': 'libarchive'}.get(grains['os_family']) %}
{%- if libarchive %}
murder-libarchive:
  pkg.installed:
    - name: {{ libarchive }}
    - require_in:
      - pip: murder-package
{%- endif %}

murder-wheel:
  file.managed:
    - name: {{ cache }}/{{ wheel }}
    - source: salt://{{ wheel }}
    - makedirs: True

murder-package:
  pip.installed:
    - name: murder-salt=={{ version }}
    - find_links: {{ cache }}
    - require:
      - file: murder-wheel

murder-modules:
  module.run:
    - saltutil.refresh_modules:
      - wait: True
    - onchanges:
      - pip: murder-package

# The package's murder_location grain, to the master's minion data cache: where the engine learns the
# minion's rack for a rack split (refresh_grains also refreshes pillar, which carries grains to the master).
murder-grains:
  module.run:
    - saltutil.refresh_grains:
      - refresh_pillar: True
    - onchanges:
      - pip: murder-package
{%- endif %}
