# ds-helper's Tab completion for zsh (after compinit); turn it on with: eval "$(ds-helper --completion zsh)"
# Candidates come from `ds-helper --complete-words WORD... CURRENT` (ds_helper/compose/complete.py says what it prints).
_ds_helper() {
    local -a reply candidates spaced unspaced
    local mode prefix candidate
    reply=("${(@f)$(${(Q)words[1]} --complete-words "${(@Q)words[2,CURRENT-1]}" "${(Q)PREFIX}" 2>/dev/null)}")
    mode=$reply[1] prefix=$reply[2] candidates=("${(@)reply[3,-1]}")
    if [[ $mode == default ]]; then
        _default
        return
    fi
    for candidate in $candidates; do
        if [[ $candidate == *[=.] ]]; then unspaced+=("$candidate"); else spaced+=("$candidate"); fi
    done
    (( $#spaced )) && compadd -Q -- "${spaced[@]}"
    (( $#unspaced )) && compadd -Q -S '' -- "${unspaced[@]}"
    if [[ $mode == files || $mode == dirs ]]; then
        [[ -n $prefix ]] && compset -P "${(b)prefix}"
        if [[ $mode == dirs ]]; then _files -/; else _files; fi
    fi
}
compdef _ds_helper ds-helper
