#!/usr/bin/env bash
# The deploy script `cargo xtask deploy` is measured against (`cargo xtask
# bench deploy`): what teams write before they have a deploy tool. Build,
# push, `terraform init` and `terraform apply` everything, point the
# service at Terraform's task definition, wait for `aws ecs wait
# services-stable`. It is run from a checkout of this project against the
# sandbox; each step prints `step <name> <seconds>` on stdout for the
# benchmark.
#
# Inputs (environment): REGISTRY (host:port of the image registry), APP
# (image name), ENVIRONMENT (deploy.toml environment), XTASK (the task
# runner, used for `infra apply` so Terraform gets the same backend and
# variables it does), DOCKER (docker client), DOCKER_BUILD (how to build
# with BuildKit, default "$DOCKER build"), BUILD_ARGS (extra `docker build`
# arguments: the same ones xtask passes, so both share Docker's cache),
# plus the sandbox's AWS_* and SECRETS_PASSWORD.
set -euo pipefail

: "${REGISTRY:?}" "${APP:?}" "${ENVIRONMENT:?}" "${XTASK:?}"
DOCKER=${DOCKER:-docker}
read -r -a docker_build <<<"${DOCKER_BUILD:-$DOCKER build}"
read -r -a build_args <<<"${BUILD_ARGS:-}"

step() {
    local name=$1
    shift
    local started
    started=$(date +%s.%N)
    "$@" >&2
    awk -v name="$name" -v started="$started" -v now="$(date +%s.%N)" 'BEGIN { printf "step %s %.3f\n", name, now - started }'
}

sha=$(git rev-parse HEAD)
image="$REGISTRY/$APP:naive-${sha:0:12}"
export DOCKER_BUILDKIT=1

step "docker build" "${docker_build[@]}" --file docker/Dockerfile --tag "$image" \
    --build-arg "GIT_SHA=$sha" "${build_args[@]}" .

push() {
    aws ecr get-login-password | "$DOCKER" login --username AWS --password-stdin "$REGISTRY"
    "$DOCKER" push "$image"
}
step "docker push" push

# A script runs `terraform init` before every apply (a CI job has no
# .terraform from the last run); xtask skips init when nothing it records
# changed, so the script asks for it.
step "terraform apply" "$XTASK" --yes infra apply --reinit --image "$image"

outputs() {
    TF_DATA_DIR="$PWD/target/terraform/$ENVIRONMENT/environment" terraform -chdir=infra/environments output -raw "$1"
}
update() {
    aws ecs update-service --cluster "$(outputs cluster_name)" --service "$(outputs service_name)" \
        --task-definition "$(outputs task_definition_arn)" >/dev/null
}
step "aws ecs update-service" update

wait_stable() {
    aws ecs wait services-stable --cluster "$(outputs cluster_name)" --services "$(outputs service_name)"
}
step "aws ecs wait services-stable" wait_stable
