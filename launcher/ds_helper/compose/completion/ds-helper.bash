# ds-helper's Tab completion for bash; turn it on with: eval "$(ds-helper --completion bash)"
# Candidates come from `ds-helper --complete-words WORD... CURRENT` (ds_helper/compose/complete.py says what it prints).
_ds_helper() {
    local IFS=$' \t\n' line=${COMP_LINE:0:COMP_POINT}
    # The whole word at the cursor: bash's own words split at '=' and ':' (COMP_WORDBREAKS), ours do not.
    local current=${line##*[[:space:]]}
    # What readline replaces: the word's tail after its last word-break character.
    local tail=${current##*[${COMP_WORDBREAKS//[[:space:]]/}]}
    local -a before
    read -r -a before <<<"${line:0:${#line}-${#current}}"
    local reply mode prefix candidate
    reply=$("${before[0]}" --complete-words "${before[@]:1}" "$current" 2>/dev/null) || return 0
    local -a candidates=()
    { IFS= read -r mode; IFS= read -r prefix; mapfile -t candidates; } <<<"$reply"
    COMPREPLY=()
    if [[ $mode == default || ($mode == files && ${#candidates[@]} -eq 0) ]]; then
        compopt -o default  # readline's own file names, quoted as it quotes them
        return 0
    fi
    if [[ $mode == dirs ]]; then
        compopt -o dirnames
        return 0
    fi
    for candidate in "${candidates[@]}"; do
        [[ -n $candidate ]] && COMPREPLY+=("${candidate:${#current}-${#tail}}")
    done
    if [[ $mode == files ]]; then  # keys and the script's file name share the place
        while IFS= read -r candidate; do
            [[ -d $candidate ]] && candidate+=/
            COMPREPLY+=("$candidate")
        done < <(compgen -f -- "$tail")
    fi
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *[=./] ]]; then
        compopt -o nospace
    fi
}
complete -F _ds_helper ds-helper
