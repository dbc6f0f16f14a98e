{
  "targets": [
    {
      "target_name": "retain_torch",
      "sources": ["native/engine.cc", "native/dist.cc"],
      "includes": ["native/torch.gypi"],
      "cflags_cc!": ["-fno-rtti", "-fno-exceptions", "-std=gnu++17", "-std=gnu++14"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O3", "-Wno-unused-parameter", "-Wno-deprecated-declarations"],
      "cflags!": ["-fno-exceptions"]
    }
  ]
}
