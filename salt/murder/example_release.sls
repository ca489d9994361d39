{#- An example: keep /srv/myapp on the release named in pillar (murder:myapp:release).
    The release must already be on disk (deployed with salt-run murder.deploy). -#}
/srv/myapp:
  murder.release:
    - release: {{ pillar['murder']['myapp']['release'] | json }}
    - keep: 5
    - shared: [log, tmp]
    - check_cmd: 'test -x /srv/myapp/current/bin/app'
    - check_timeout: 30
