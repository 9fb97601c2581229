#!/bin/sh
# xtask-secrets-hook v2, installed by `cargo xtask install-hooks`.
#
# Refuses a commit that would put decrypted Terraform secrets into git
# (secrets.tfvars, *.tfvars.plain, or any *.tfvars that sets a variable the
# Terraform code declares `sensitive = true`), or an encrypted file (*.enc) that is not
# what `openssl enc -salt` writes: `Salted__`, an 8-byte salt, then whole
# 16-byte AES blocks. It checks the staged content, not the working tree.
# Plain POSIX sh, so it costs milliseconds and needs no build.
# To bypass it (think twice): git commit --no-verify

staged=$(git -c core.quotePath=false diff --cached --name-only --diff-filter=ACMR) || exit 1
failed=0

# The variables declared `sensitive = true` in the tracked *.tf files: a
# `variable "name" {` line names the block, its closing brace at column 0
# ends it.
secret_names=$(git ls-files -- '*.tf' | while IFS= read -r tf; do cat -- "$tf"; done 2>/dev/null | awk '
    /^[[:space:]]*variable[[:space:]]+"/ { name = $0; sub(/^[[:space:]]*variable[[:space:]]+"/, "", name); sub(/".*/, "", name) }
    /sensitive[[:space:]]*=[[:space:]]*true/ { if (name != "") print name }
    /^}/ { name = "" }
' | sort -u)

# A here-document rather than a pipe, so that `failed` is set in this shell
# and not in a pipeline's subshell.
while IFS= read -r path; do
    [ -n "$path" ] || continue
    case "${path##*/}" in
        secrets.tfvars | *.tfvars.plain)
            echo "pre-commit: refusing to commit $path: it holds decrypted secrets" >&2
            echo "  unstage it:   git rm --cached -- '$path'" >&2
            echo "  commit the encrypted file instead:   cargo xtask secrets encrypt" >&2
            failed=1
            ;;
        *.tfvars)
            for name in $secret_names; do
                if git cat-file blob ":$path" | grep -Eq "^[[:space:]]*\"?$name\"?[[:space:]]*="; then
                    echo "pre-commit: refusing to commit $path: it sets $name, a sensitive Terraform variable, in plaintext" >&2
                    echo "  keep it in the encrypted file:   cargo xtask secrets edit" >&2
                    failed=1
                    break
                fi
            done
            ;;
        *.enc)
            size=$(git cat-file -s ":$path") || { failed=1; continue; }
            # tr drops NUL bytes, which a shell variable cannot hold.
            header=$(git cat-file blob ":$path" | head -c 8 | tr -d '\000')
            if [ "$header" != "Salted__" ] || [ "$size" -lt 32 ] || [ $(((size - 16) % 16)) -ne 0 ]; then
                echo "pre-commit: refusing to commit $path: it is not an encrypted file (expected 'Salted__', an 8-byte salt and whole 16-byte blocks; it has $size bytes)" >&2
                echo "  write it with:   cargo xtask secrets encrypt" >&2
                failed=1
            fi
            ;;
    esac
done <<EOF_STAGED
$staged
EOF_STAGED

exit "$failed"
