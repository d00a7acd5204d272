# Installs headers, libraries and a namespaced CMake package: find_package(tsumugi).
include(CMakePackageConfigHelpers)
install(DIRECTORY include/tsumugi DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT tsumugiTargets NAMESPACE tsumugi:: FILE tsumugiTargets.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tsumugi)
configure_package_config_file(cmake/tsumugiConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/tsumugiConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tsumugi)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/tsumugiConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tsumugiConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/tsumugiConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tsumugi)
