{#- murder/deploy/request: a deploy asked for on the master's event bus (salt-run event.send).
    Requests fired by minions carry an 'id' and are ignored: only the master may deploy.
    Every key of the request goes to murder.deploy, which refuses (and records) a key it does
    not take: the list of arguments is murder_core.request.DEPLOY_ARGUMENTS, nowhere else. -#}
{%- if 'id' not in data %}
murder_deploy_request:
  runner.murder.deploy:
    - args:
{%- for key, value in data.items() if not key.startswith('_') %}
      - {{ key | json }}: {{ value | json }}
{%- endfor %}
{%- endif %}
