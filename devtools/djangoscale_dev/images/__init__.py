"""Container images built on this machine without Docker and without a registry.

The real node's containerd can only run images that were imported into it, and this machine
has neither Docker nor a registry. So images are built with buildah (vfs storage, chroot
isolation, all state under a private cache folder) from a Debian root filesystem made by
debootstrap, written out as OCI archives, and cached by a hash of their inputs like the
control-plane binaries.

- `store`: the private buildah store, the cache folder and its locks.
- `base`: the Debian (+ Python) base image from debootstrap and the apt mirror of the machine.
- `build`: `build_image(context, tag)` for any Dockerfile context, cached.
- `project`: the project's own images (operator, app-base, sample app, pgbouncer).
- `containerd`: import an archive into a containerd, the way `kind load` does.
"""
