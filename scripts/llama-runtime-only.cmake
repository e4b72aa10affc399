# Loaded by CMake right after llama.cpp's project() call (CMAKE_PROJECT_llama.cpp_INCLUDE, passed by
# scripts/install-llama.sh). llama-cpp-python forces LLAMA_BUILD_COMMON=ON in its cache, which compiles
# llama.cpp's common library (chat templates, argument parsing, an HTTP client: about 55 files) that neither
# llama_cpp's ctypes bindings nor midillm-lite ever load. A normal variable shadows that cache entry inside
# llama.cpp's own folder, so only libllama and libggml are compiled.
set(LLAMA_BUILD_COMMON OFF)
