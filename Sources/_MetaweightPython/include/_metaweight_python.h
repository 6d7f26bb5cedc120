/* The Python extension exports only PyInit__core. */
