{#- An example (the README's): keep the app myapp on the release pillar names (myapp:release),
    fetched through the swarm when it is not on disk yet, under each minion's murder: base_dir. -#}
myapp:
  murder.release:
    - release: {{ pillar['myapp']['release'] | yaml_encode }}
    - fetch: True
    - keep: 5
    - shared: [log, tmp]
    - check_cmd: ./bin/healthcheck   # the app's own check, run in the release directory
    - check_timeout: 30
