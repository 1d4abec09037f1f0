# libmosquitto (Debian libmosquitto-dev) ships neither a CMake package nor a pkg-config file
# that every release has; this finds it and defines the imported target mosquitto::mosquitto.
# sluiceConfig.cmake uses this same module, so an embedder's build finds it the same way.
find_path(mosquitto_INCLUDE_DIR mosquitto.h DOC "mosquitto.h: install libmosquitto-dev")
find_library(mosquitto_LIBRARY NAMES mosquitto DOC "libmosquitto: install libmosquitto-dev")
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(mosquitto REQUIRED_VARS mosquitto_LIBRARY mosquitto_INCLUDE_DIR)
if(mosquitto_FOUND AND NOT TARGET mosquitto::mosquitto)
    add_library(mosquitto::mosquitto UNKNOWN IMPORTED)
    set_target_properties(mosquitto::mosquitto PROPERTIES
        IMPORTED_LOCATION "${mosquitto_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${mosquitto_INCLUDE_DIR}")
endif()
mark_as_advanced(mosquitto_INCLUDE_DIR mosquitto_LIBRARY)
