# ds-helper's Tab completion for fish; turn it on with: ds-helper --completion fish | source
# Candidates come from `ds-helper --complete-words WORD... CURRENT` (ds_helper/compose/complete.py says what it prints).
function __ds_helper_complete
    set -l before (commandline -opc)
    set -l current (commandline -ct)
    set -l reply ($before[1] --complete-words $before[2..-1] "$current" 2>/dev/null)
    or return 0
    set -l mode $reply[1]
    set -l prefix $reply[2]
    printf '%s\n' $reply[3..-1]
    if contains -- $mode files dirs default
        set -l path (string sub --start (math (string length -- "$prefix") + 1) -- "$current")
        for name in (__fish_complete_path "$path")
            if test $mode != dirs; or string match -q -- '*/' (string split \t -- $name)[1]
                echo $prefix$name
            end
        end
    end
end
complete -c ds-helper -f -a '(__ds_helper_complete)'
