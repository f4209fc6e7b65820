//! regent: the bundle server (`regent serve`) and the policy authors' CLI.
