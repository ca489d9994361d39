{#- murder/deploy/<deploy_id>/start: every targeted minion fetches the release through the swarm. -#}
murder_peer:
  local.murder.peer:
    - tgt: {{ data['tgt'] | json }}
    - tgt_type: {{ data['tgt_type'] | json }}
    - kwarg: {{ data['peer'] | json }}
