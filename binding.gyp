{
  "variables": {
    "sources_json": "<(module_root_dir)/native/sources.json"
  },
  "target_defaults": {
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
    "cflags_cc": ["-std=c++17", "-O3", "-fno-math-errno", "-fexceptions", "-Wall", "-Wno-unused-parameter"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
    "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
    "xcode_settings": {
      "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
      "GCC_ENABLE_CPP_RTTI": "YES",
      "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
      "OTHER_CPLUSPLUSFLAGS": ["-fno-math-errno", "-Wall", "-Wno-unused-parameter"]
    },
    "msvs_settings": {"VCCLCompilerTool": {"ExceptionHandling": 1, "RuntimeTypeInfo": "true", "AdditionalOptions": ["/utf-8"]}}
  },
  "targets": [
    {
      "target_name": "laminate",
      "sources": ["<!@(node -p \"require('./native/sources.json').common.join(' ')\")"],
      "cflags": ["-pthread"],
      "ldflags": ["-pthread"],
      "conditions": [
        ["OS=='linux'", {"ldflags": ["<!@(node -p \"require('./native/sources.json').linuxLinkFlags.join(' ')\")"]}],
        ["target_arch=='x64'", {"dependencies": ["laminate_avx2", "laminate_avx2vnni", "laminate_avx512", "laminate_avx512vnni"]}],
        ["target_arch=='arm64'", {"dependencies": ["laminate_neon", "laminate_neondot"]}]
      ]
    }
  ],
  "conditions": [
    ["target_arch=='x64'", {
      "targets": [
        {
          "target_name": "laminate_avx2",
          "type": "static_library",
          "sources": ["<!@(node -p \"require('./native/sources.json').isa.avx2.sources.join(' ')\")"],
          "cflags_cc": ["<!@(node -p \"require('./native/sources.json').isa.avx2.flags.join(' ')\")"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["<!@(node -p \"require('./native/sources.json').isa.avx2.flags.join(' ')\")"]},
          "msvs_settings": {"VCCLCompilerTool": {"AdditionalOptions": ["<!@(node -p \"require('./native/sources.json').isa.avx2.msvcFlags.join(' ')\")"]}}
        },
        {
          "target_name": "laminate_avx2vnni",
          "type": "static_library",
          "sources": ["<!@(node -p \"require('./native/sources.json').isa.avx2vnni.sources.join(' ')\")"],
          "cflags_cc": ["<!@(node -p \"require('./native/sources.json').isa.avx2vnni.flags.join(' ')\")"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["<!@(node -p \"require('./native/sources.json').isa.avx2vnni.flags.join(' ')\")"]},
          "msvs_settings": {"VCCLCompilerTool": {"AdditionalOptions": ["<!@(node -p \"require('./native/sources.json').isa.avx2vnni.msvcFlags.join(' ')\")"]}}
        },
        {
          "target_name": "laminate_avx512",
          "type": "static_library",
          "sources": ["<!@(node -p \"require('./native/sources.json').isa.avx512.sources.join(' ')\")"],
          "cflags_cc": ["<!@(node -p \"require('./native/sources.json').isa.avx512.flags.join(' ')\")"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["<!@(node -p \"require('./native/sources.json').isa.avx512.flags.join(' ')\")"]},
          "msvs_settings": {"VCCLCompilerTool": {"AdditionalOptions": ["<!@(node -p \"require('./native/sources.json').isa.avx512.msvcFlags.join(' ')\")"]}}
        },
        {
          "target_name": "laminate_avx512vnni",
          "type": "static_library",
          "sources": ["<!@(node -p \"require('./native/sources.json').isa.avx512vnni.sources.join(' ')\")"],
          "cflags_cc": ["<!@(node -p \"require('./native/sources.json').isa.avx512vnni.flags.join(' ')\")"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["<!@(node -p \"require('./native/sources.json').isa.avx512vnni.flags.join(' ')\")"]},
          "msvs_settings": {"VCCLCompilerTool": {"AdditionalOptions": ["<!@(node -p \"require('./native/sources.json').isa.avx512vnni.msvcFlags.join(' ')\")"]}}
        }
      ]
    }],
    ["target_arch=='arm64'", {
      "targets": [
        {
          "target_name": "laminate_neon",
          "type": "static_library",
          "sources": ["<!@(node -p \"require('./native/sources.json').isaArm64.neon.sources.join(' ')\")"],
          "cflags_cc": ["<!@(node -p \"require('./native/sources.json').isaArm64.neon.flags.join(' ')\")"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["<!@(node -p \"require('./native/sources.json').isaArm64.neon.flags.join(' ')\")"]}
        },
        {
          "target_name": "laminate_neondot",
          "type": "static_library",
          "sources": ["<!@(node -p \"require('./native/sources.json').isaArm64.neondot.sources.join(' ')\")"],
          "cflags_cc": ["<!@(node -p \"require('./native/sources.json').isaArm64.neondot.flags.join(' ')\")"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["<!@(node -p \"require('./native/sources.json').isaArm64.neondot.flags.join(' ')\")"]}
        }
      ]
    }]
  ]
}
