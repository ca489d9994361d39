{#- murder/deploy/request: a deploy asked for on the master's event bus (salt-run event.send).
    Requests fired by minions carry an 'id' and are ignored: only the master may deploy. -#}
{%- if 'id' not in data %}
murder_deploy_request:
  runner.murder.deploy:
    - args:
{%- for key in ['source', 'app', 'tgt', 'tgt_type', 'release', 'base_dir', 'activate', 'keep', 'timeout', 'min_success'] if key in data %}
      - {{ key }}: {{ data[key] | json }}
{%- endfor %}
{%- endif %}
