# bash completion for sluice
_sluice() {
  local cur prev cmd
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD-1]}
  cmd=${COMP_WORDS[1]}
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "run dev resume runs show submit worker wait ui check graph cache store version help" -- "$cur"))
    return
  fi
  case "$prev" in
    --store|--trace|--input) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --format) COMPREPLY=($(compgen -W "mermaid dot" -- "$cur")); return ;;
    --status) COMPREPLY=($(compgen -W "queued running waiting paused completed failed cancelled interrupted" -- "$cur")); return ;;
  esac
  case "$cmd" in
    run) COMPREPLY=($(compgen -W "--input --pipeline --json --budget --store --trace --memory-limit" -- "$cur")) ;;
    dev) COMPREPLY=($(compgen -W "--input --pipeline --store" -- "$cur")) ;;
    resume) COMPREPLY=($(compgen -W "--input --force --json --store --trace" -- "$cur")) ;;
    runs)
      if [ "$COMP_CWORD" -eq 2 ]; then
        COMPREPLY=($(compgen -W "prune --status --pipeline --queue --limit --before --json --store" -- "$cur"))
      else
        COMPREPLY=($(compgen -W "--older-than --status --keep --pipeline --limit --before --json --store" -- "$cur"))
      fi ;;
    show) COMPREPLY=($(compgen -W "--json --timeline --store" -- "$cur")) ;;
    ui) COMPREPLY=($(compgen -W "--store --host --port" -- "$cur")) ;;
    submit) COMPREPLY=($(compgen -W "--input --pipeline --budget --queue --store" -- "$cur")) ;;
    worker) COMPREPLY=($(compgen -W "--concurrency --queue --store --grace --poll --until-idle" -- "$cur")) ;;
    wait) COMPREPLY=($(compgen -W "--json --timeout --store" -- "$cur")) ;;
    graph) COMPREPLY=($(compgen -W "--format --pipeline --tree" -- "$cur")) ;;
    cache) COMPREPLY=($(compgen -W "stats clear --step --json --store" -- "$cur")) ;;
    store) COMPREPLY=($(compgen -W "check vacuum stats --json --store" -- "$cur")) ;;
    *) COMPREPLY=() ;;
  esac
  if [ ${#COMPREPLY[@]} -eq 0 ] && [[ "$cur" != -* ]]; then
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _sluice sluice
