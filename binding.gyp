{
  "targets": [
    {
      "target_name": "meshblock_native",
      "sources": ["native/meshblock_native.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror"]
    }
  ]
}
