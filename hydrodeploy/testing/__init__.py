"""What hydrodeploy's own tests use and other projects' tests may reuse: real SSH hosts in network
namespaces (:mod:`hydrodeploy.testing.sshd`) and a replaying stand-in for the Compute Engine API
(:mod:`hydrodeploy.testing.gcp`, a fake: the only one, because the real service cannot be reached
from a test)."""
