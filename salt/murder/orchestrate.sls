{#- An orchestration: deploy with murder, then a step that runs only when the deploy succeeded.

    salt-run state.orchestrate murder.orchestrate pillar='{"deploy": {"source": "/srv/builds/myapp", "app": "myapp", "tgt": "web*"}}'

    pillar deploy: the arguments of murder.deploy; pillar after_tgt: where the next step runs (default: deploy:tgt).
    A failed deploy fails its step (the runner's retcode), the next step does not run, and
    salt-run state.orchestrate exits non-zero. -#}
{%- set deploy = pillar['deploy'] %}
murder-deploy:
  salt.runner:
    - name: murder.deploy
    {#- As one kwarg: given as state arguments, check_cmd would be taken by Salt's own requisite. #}
    - kwarg: {{ deploy | json }}

after-the-deploy:
  salt.function:
    - name: test.echo
    - tgt: {{ pillar.get('after_tgt', deploy['tgt']) | json }}
    - tgt_type: {{ deploy.get('tgt_type', 'glob') | json }}
    - arg:
      - {{ ("deployed " ~ deploy['app']) | json }}
    - require:
      - salt: murder-deploy
