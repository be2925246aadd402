#!/bin/sh
# Derive the scalable protocols from the base ones by chaining rewrites; each command checks every
# precondition, verifies the result against the base program in simulation, and writes it.
# Run from the repository root: sh protocols/scalable/derive.sh
set -e
hydrodeploy rewrite protocols/voting.ded --steps protocols/scalable/voting.steps -o protocols/scalable/voting.ded
hydrodeploy rewrite protocols/two_pc.ded --steps protocols/scalable/two_pc.steps -o protocols/scalable/two_pc.ded
hydrodeploy rewrite protocols/paxos.ded --steps protocols/scalable/paxos.steps -o protocols/scalable/paxos.ded
