{
  "targets": [
    {
      "target_name": "meshblock_native",
      "sources": ["native/meshblock_native.c", "native/meshblock_aio.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror"]
    }
  ]
}
