{#- murder/deploy/<deploy_id>/start: every minion the runner expects fetches the release through the swarm.
    The runner resolved the target once; the exact list is used so that the minions it waits for
    are the minions that run the job. -#}
murder_peer:
  local.murder.peer:
    - tgt: {{ data['minions'] | json }}
    - tgt_type: list
    - kwarg: {{ data['peer'] | json }}
